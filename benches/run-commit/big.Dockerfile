# 256 MiB of incompressible data written by one RUN (benches/run-commit-vs-buildah.sh).
FROM localhost/bbfixture:latest
RUN head -c 268435456 /dev/urandom > /big.bin
