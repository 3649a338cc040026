//! Browser test: see below.
