use std::net::TcpStream;

use govbus_harness::NatsServer;

#[test]
fn starts_on_a_dynamic_port_and_restarts_on_the_same_one() {
    let mut server = NatsServer::start().expect("server starts");
    let port = server.client_port();
    assert_ne!(port, 4222, "the harness must not take the default port");
    TcpStream::connect(("127.0.0.1", port)).expect("client port accepts connections");

    server.kill().expect("kill");
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    server.restart().expect("restart");
    assert_eq!(server.client_port(), port);
    TcpStream::connect(("127.0.0.1", port)).expect("same port after restart");
    assert!(server.log().contains("--- start 2 ---"));
}

#[test]
fn two_servers_do_not_share_ports_or_stores() {
    let first = NatsServer::start().expect("first starts");
    let second = NatsServer::start().expect("second starts");
    assert_ne!(first.client_port(), second.client_port());
    assert_ne!(first.store_dir(), second.store_dir());
}
