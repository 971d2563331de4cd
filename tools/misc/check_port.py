"""Exit 1 with a message if a TCP port is taken (used by tools/dist_train.sh, dist_test.sh).

    python tools/misc/check_port.py PORT [HOST] [SCRIPT]

Only the standard library, so that it costs nothing before a distributed launch.
"""
import errno
import socket
import sys


def port_in_use(port: int, host: str = '127.0.0.1') -> bool:
    """Whether nothing can listen on ``host:port`` (another run holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # like torch's TCPStore: connections of a finished run (TIME_WAIT) do not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:  # another address problem is torch.distributed's to report
            return err.errno == errno.EADDRINUSE
    return False


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not 1 <= len(argv) <= 3 or not argv[0].isdigit():
        print('usage: check_port.py PORT [HOST] [SCRIPT]', file=sys.stderr)
        return 2
    port = int(argv[0])
    host = argv[1] if len(argv) > 1 else '127.0.0.1'
    script = argv[2] if len(argv) > 2 else 'tools/dist_train.sh'
    if port_in_use(port, host):
        print(
            f'error: port {port} on {host} is already in use (another distributed run?); '
            f'choose a free one with PORT=, e.g. PORT={port + 1} {script} ...', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
