"""An OpenAI-compatible HTTP API over SO-LoRA experts (`solora-node serve`, and in the daemon).

schema.py (request/response shapes), errors.py (the API's error shape), engine.py (gate,
routing and generation on one model), app.py (routes, admission), http.py (uvicorn inside
an asyncio loop), live.py (the daemon's copy of its freshest experts). See docs/serving.md.
"""
