"""mean token accuracy of each training log and evaluation (OpenAI's train/valid_mean_token_accuracy)

Revision ID: 0006
Revises: 0005_access
Create Date: 2026-12-06 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005_access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mean_token_accuracy", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("eval_mean_token_accuracy", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_column("eval_mean_token_accuracy")
        batch_op.drop_column("mean_token_accuracy")
