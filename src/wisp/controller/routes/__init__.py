"""REST handlers of the controller, one module per resource collection."""
