# 20,000 files of 1 KiB written by one RUN (benches/run-commit-vs-buildah.sh).
# (Debian's static busybox has neither split nor awk math: the files hold
# their zero-padded index.)
FROM localhost/bbfixture:latest
RUN mkdir /many && awk 'BEGIN { for (i = 0; i < 20000; i++) { f = "/many/f" i; printf "%01024d", i > f; close(f) } }'
