fn main() -> std::process::ExitCode {
    sf_spackenv::main()
}
