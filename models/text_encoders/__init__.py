"""Text encoders installed as models of their own (base any) that several families read."""
