from app.cli import main

if __name__ == "__main__":  # not when a worker process (embedder, uvicorn) re-imports __main__
    raise SystemExit(main())
