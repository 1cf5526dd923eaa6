#!/bin/sh
# An example MicroFaaS user function in shell: the request body arrives on
# stdin, the response goes to stdout. A non-zero exit is an error whose text
# is the tail of stderr. The worker image gets a static busybox as /bin/sh
# when a script function is added (x86).
read -r name || true
if [ -z "$name" ]; then
  echo "hello.sh: empty request: send a name" >&2
  exit 2
fi
echo "Hello, $name!"
