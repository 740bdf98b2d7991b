"""E-mail to the people of a hub when its lifecycle moves (approved, running, suspended, ...)."""
