"""The what-if web app (``anomalens serve``): the optional extra ``anomalens[serve]``.

``whatif`` answers the page's questions with the library alone; ``app`` wraps it in Starlette +
uvicorn and is the only module that needs the extra; ``page`` is the static page it serves.
"""
