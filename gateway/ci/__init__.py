"""What ``tgw check`` uses to judge dumps in a firmware team's CI: the golden-file
comparison and the JUnit report. Imports nothing of the runtime."""
