;; A WebAssembly function in WAT: prints its whole input document back, so its result
;; is {"node":..., "activation_id":..., "input":..., "children":[...], "budget_ms":...}.
;;
;;   wat2wasm echo.wat -o echo.wasm       (Debian's wabt)
;;   curl -T echo.wasm -H 'content-type: application/wasm' localhost:8080/functions/ECHO
;;
;; It reads stdin (fd 0) into memory until end of file, then writes it to stdout (fd 1):
;; the same contract as a program run by `exec`.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; 0..8: an iovec; 8..12: bytes read or written; the input from 1024 on.
  (memory (export "memory") 17)
  (func (export "_start")
    (local $end i32)
    (local.set $end (i32.const 1024))
    (block $eof
      (loop $more
        ;; iovec = { base: $end, len: room left below 1 MiB }
        (i32.store (i32.const 0) (local.get $end))
        (i32.store (i32.const 4) (i32.sub (i32.const 1048576) (local.get $end)))
        (br_if $eof (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 0)))
        (br_if $eof (i32.eqz (i32.load (i32.const 8))))
        (local.set $end (i32.add (local.get $end) (i32.load (i32.const 8))))
        (br $more)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.sub (local.get $end) (i32.const 1024)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
