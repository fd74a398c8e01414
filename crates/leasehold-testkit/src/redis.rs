//! Spawner for redis (to be written).
