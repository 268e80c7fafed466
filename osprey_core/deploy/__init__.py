"""``osprey deploy``: services as plugins rendered to compose files and run with podman.

Imported only by ``osprey deploy`` and its plugin's hooks; jinja2 and podman are reached
lazily, so ``osprey --help`` never pays for them."""
