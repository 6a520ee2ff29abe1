"""The MLflow pyfunc of each method's registered sampler, logged as code (never pickled): flows.tracking.sampler_code
names the file; each file ends with ``mlflow.models.set_model``."""
