//! Apache Cassandra 3.0–5.0 on-disk formats (FORMAT.md section 1), and ScyllaDB's Scylla.db
//! (section 4.5, [`scylla`]). Nothing here knows about keys.

pub mod compression_info;
pub mod crc;
pub mod data;
pub mod descriptor;
pub mod integrity;
pub mod pages;
pub mod scylla;
pub mod statistics;
pub mod toc;
pub mod txnlog;

pub use compression_info::CompressionInfo;
pub use descriptor::{Descriptor, Format, Generation};
