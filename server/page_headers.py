"""The security headers of every response, in one place for both servers that send them: the app
(server/security.py adds them to each response) and nginx for the files it serves itself (nginx/render.py writes
them into `pinchat-headers.conf`). No imports: render.py runs this file with the standard library alone."""

# Pyodide compiles its WebAssembly ('wasm-unsafe-eval'); nothing else is allowed to run or load from elsewhere.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self'",
    "img-src 'self' data: https:",  # a remote image in an answer loads only when the user clicks its placeholder
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
