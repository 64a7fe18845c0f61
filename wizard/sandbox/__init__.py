"""The LINE sandbox: an HTTP imitation of the LINE Platform for tests and the offline demo."""
