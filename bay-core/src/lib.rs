//! bay-core
