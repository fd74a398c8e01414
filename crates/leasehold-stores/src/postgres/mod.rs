//! lock.postgres (to be written).
