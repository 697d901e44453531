"""The studio's HTTP routes, one APIRouter per feature (studio.app.create_app includes them):

* :mod:`studio.routes.models`: health, stats, the model listing and cards;
* :mod:`studio.routes.generate`: generate, random, interpolate (the edits, through the batcher);
* :mod:`studio.routes.photo`: aligning an uploaded photo;
* :mod:`studio.routes.heavy`: projection and completion as jobs, and the jobs themselves;
* :mod:`studio.routes.page`: the page and Vue.

:mod:`studio.routes.deps` holds the dependencies they share (the registry, the job queue).
"""
