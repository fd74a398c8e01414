//! Spawner for postgres (to be written).
