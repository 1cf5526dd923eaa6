// Package security holds the attack suite that needs several real
// components at once: a hostile user function (runtime/sandbox/testdata/
// attacker) built into a real x86 worker, booted under QEMU by the real
// orchestrator. The attacks on single components live next to their code
// (protocol, runtime/sandbox). docs/security.md lists every attack and
// where its test is.
package security
