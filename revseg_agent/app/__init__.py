"""What people run on top of the library: the `revseg` command line (`app.cli`, one module per
command family), the `--step` editor, the output files of a run, the browser UI (`app.ui`) and
`revseg demo`. Nothing below `app` imports from it."""
