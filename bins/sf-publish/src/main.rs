fn main() -> std::process::ExitCode {
    sf_publish::main()
}
