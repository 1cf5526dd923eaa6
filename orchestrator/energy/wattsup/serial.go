package wattsup

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// OpenSerial opens a tty raw at 115200 baud, 8 data bits, no parity, 1 stop
// bit (the WattsUp's FTDI serial port), no flow control, with pending input
// discarded. The file is non-blocking underneath, so Close and read
// deadlines interrupt a Read.
func OpenSerial(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("wattsup: open %s: %w (is the meter plugged in, and are you in the dialout group?)", path, err)
	}
	if err := setRaw115200(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("wattsup: %s is not a serial port: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

func setRaw115200(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	// cfmakeraw
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	// 8N1, receiver on, modem lines ignored, no hardware flow control.
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | unix.B115200
	t.Ispeed, t.Ospeed = unix.B115200, unix.B115200
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return err
	}
	return unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIOFLUSH)
}
