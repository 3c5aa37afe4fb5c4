"""`pipeline reconcile`: asks Ironic's and Glance's APIs about lost ends and stuck nodes, and writes
what they answered back into the relay topics (docs/reconcile.md)."""
