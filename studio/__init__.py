"""The face studio: a FastAPI backend and a Vue 3 page that edit a face through its latent z.

``studio.cli`` (``facegan-studio``) starts it; ``studio.app`` holds the API and serves
``static/`` (the page) and Vue's browser build from ``node_modules/`` (``npm ci --prefix studio``).
The studio reads model cards and calls model/; it never imports tasks/.
"""
