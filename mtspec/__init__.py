"""mtspec: Model Spec Midtraining in JAX."""
