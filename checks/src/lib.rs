//! Checks of the repository itself, in `tests/`: `compose.yaml`, the Dockerfile and the
//! README against what the `handlers` and `gateway` binaries accept. Nothing to use here.
