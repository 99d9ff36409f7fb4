"""Who a request comes from and what it may do: the token roles, the token file, and
the role each route needs."""
