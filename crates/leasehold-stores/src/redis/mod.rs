//! lock.redis (to be written).
