//! Spawner for etcd (to be written).
