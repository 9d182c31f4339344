//! The `starling` binary: see [`starling::cli`].

fn main() -> std::process::ExitCode {
    starling::cli::main()
}
