"""The REST API and the /v1 gateway: thin routers over the store and the control loop."""
