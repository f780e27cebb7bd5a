"""One module (or package) per external system the service talks to."""
