"""The Docker tests' engine and test image are the session's ``client`` and ``reference_image``
fixtures (tests/conftest.py): the image is built once, or found by its content hash, for every
Docker test of the session."""
