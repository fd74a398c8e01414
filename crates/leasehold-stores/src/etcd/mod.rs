//! lock.etcd (to be written).
