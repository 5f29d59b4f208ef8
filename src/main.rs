//! The `astra-bus` binary: everything lives in the library; see `astra_bus::cli`.

fn main() -> std::process::ExitCode {
    astra_bus::cli::main()
}
