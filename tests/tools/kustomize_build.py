"""`kustomize build DIR` through the real kustomize (sigs.k8s.io/kustomize/api, the library
`kubectl kustomize` is built on), as bundled by the pykustomize package: no kustomize binary is
packaged for Debian 12, and Go modules cannot be fetched here. Prints the rendered YAML on
stdout; kustomize's own error on stderr and exit status 1.

Usage: python kustomize_build.py DIR
Installed into the test venv by `cargo xtask setup`.
"""

import asyncio
import sys

import pykustomize


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: kustomize_build.py DIR", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(pykustomize.build(sys.argv[1]))
    except pykustomize.KustomizeError as error:
        print(f"kustomize build {sys.argv[1]}: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(result.yaml)
    return 0


if __name__ == "__main__":
    sys.exit(main())
