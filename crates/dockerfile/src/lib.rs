//! Dockerfile front end.
