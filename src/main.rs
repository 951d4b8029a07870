//! The `hopfield-gpu` command: a thin shell over the library. Parse, run,
//! report; every failure is a typed error printed on one line with a
//! non-zero exit status.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
