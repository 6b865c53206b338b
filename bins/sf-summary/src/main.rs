fn main() -> std::process::ExitCode {
    sf_summary::main()
}
