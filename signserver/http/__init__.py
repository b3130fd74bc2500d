"""HTTP adapter: every HTTP front of a worker, ASGI apps on uvicorn in the worker's event loop.
``asgi_server`` embeds uvicorn with the limits every front shares; ``ca_front`` serves the CA's
public endpoints (CRLs, OCSP, time-stamps, CA certificates, the policy statement: ``ca_app`` routes
them to ``endpoints``); ``csc`` is the Cloud Signature Consortium API."""
