use aya::{EbpfError, maps::MapError, programs::ProgramError};

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the relay's eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("eBPF program: {0}")]
    Program(#[from] ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("{0} missing from the eBPF object")]
    Missing(&'static str),
    #[error("attaching XDP to {iface} failed in every mode tried ({modes}): {source}")]
    Attach {
        iface: String,
        modes: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("a {len}-byte frame is shorter than the generator's {need}-byte header template")]
    FrameTooShort { len: usize, need: usize },
    #[error("no interface given to attach XDP to")]
    NoInterface,
    #[error("reading per-CPU counters: {0}")]
    Cpus(std::io::Error),
}
