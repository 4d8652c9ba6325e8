fn main() -> std::process::ExitCode {
    oxiscale::cli::main()
}
