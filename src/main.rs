//! The `globalnet` binary: everything lives in the library; see `globalnet::cli`.

fn main() -> std::process::ExitCode {
    globalnet::cli::main()
}
