"""What the API's routers, the gateway and the console ask of the control plane: submit and
stop jobs, apply, scale and delete deployments, sign contracts, register nodes.

Each function is one transaction's worth of work on a session or a store, in terms of the
documents of `rainier.spec`; it writes rows and events so no router has to, and answers what a
user did wrong with `Refused`. Who may do it is decided before: by the router's caller checks.
"""
