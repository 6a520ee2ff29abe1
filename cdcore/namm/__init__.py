"""Import paths of NAMM models registered before the redesign of issue 23 (their logged sampler code imports
``cdcore.namm.bench``); new code imports :mod:`cdcore.methods.namm` and :mod:`cdcore.data.images`."""
