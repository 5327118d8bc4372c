//! One module per subcommand.
pub mod ask;
pub mod bench;
pub mod common;
pub mod eval;
pub mod eval_depth;
pub mod eval_seg;
pub mod init;
pub mod parity;
pub mod perceive;
pub mod train;
pub mod world;
