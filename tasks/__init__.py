"""Domain tasks: pure command builders and the Prefect tasks that run them."""
