SELECT nextval('bench_nextval');
