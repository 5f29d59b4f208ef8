//! The `astra-bus` binary: everything lives in the library; see `astra_bus::cli`.

/// mimalloc instead of the system allocator: the daemon's hot path allocates and frees
/// small buffers for every field of every event, and glibc's malloc spent over a third of
/// the daemon's CPU there (see the README's performance section for the measurement).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    astra_bus::cli::main()
}
